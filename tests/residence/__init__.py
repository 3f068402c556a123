"""The residence rules at work (gateway.residence): alerts as days pass."""
