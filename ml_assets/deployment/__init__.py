"""Champion promotion and the Bento build."""
