"""Line readers: newline-delimited credential reads on a FIFO, pty or serial port."""
