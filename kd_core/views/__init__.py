"""Plain-data answers for the dashboard's pages: configs, tables, frames and headlines."""
