"""Lessons beyond the tutorial: each module tells one lesson's story (see Lesson.scenario)."""
