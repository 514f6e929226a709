"""Flower server side: GC/DGC clipping wrappers, reply validation, server SGD, and the ServerApp."""
