"""Data without downloads (phantoms, the MNI152 template) and readers for users' files."""
