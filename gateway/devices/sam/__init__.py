"""ID-card SAM readers: the resident ID card and residence-permit IC card, over serial."""
