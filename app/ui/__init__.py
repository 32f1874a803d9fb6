"""The desktop app's widgets: windows, views and the theme. Logic lives in `app/` and `sync/`."""
