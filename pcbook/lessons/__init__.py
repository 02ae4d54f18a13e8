"""One module per lesson (lNN_<slug>.py): its declaration (LESSON), its acts and its judges; tutorial.py holds
what the tutorial's lessons share."""
