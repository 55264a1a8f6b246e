"""In-tree plugins. Each module is a plugin registered exactly like a third-party one; see
`sftkit.plugins.DEFAULT_PLUGINS`."""
