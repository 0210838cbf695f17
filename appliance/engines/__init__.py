"""TensorRT engines: which ones this host needs (the plan), and the key that makes an engine valid.

Building, caching and loading engines come next (issue 3); the plan and the key are the pure parts they rest on.
"""
