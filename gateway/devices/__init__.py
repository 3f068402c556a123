"""Door devices behind small protocols; the domain never touches a file descriptor."""
