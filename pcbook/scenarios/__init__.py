"""Lessons beyond the tutorial: each module tells one lesson\x27s story (see Lesson.scenario)."""
