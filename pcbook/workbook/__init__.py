"""The workbook: the course's index of lessons, the runner that replays them, the CLI, notebook support, the
container rendering and the soak."""
