"""The workbook: the lesson manifest, the runner that replays it, the judge, the CLI, notebook support."""
