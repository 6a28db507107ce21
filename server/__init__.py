"""Everything that does I/O: the aiohttp app, websockets, files, the CLI."""
