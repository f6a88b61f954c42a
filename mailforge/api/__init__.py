"""The control API (aiohttp): records intent in the store and returns; workers converge."""
