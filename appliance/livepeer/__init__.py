"""Everything go-livepeer reads: the node file's orchestrator and pricing sections, and their rendering."""
