"""The only modules that start external programs or speak a protocol: one module per program or protocol."""
