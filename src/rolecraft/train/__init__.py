"""Training code for rolecraft's learned components (kept out of the import path of `rolecraft`)."""
