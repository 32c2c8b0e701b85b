"""The input readers, one module per format; zbatch/source.py finds the files and picks."""
