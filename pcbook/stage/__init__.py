"""The stage a lesson plays on: the lesson model, the stage that brings up every process a step needs, the
StepContext acts drive it through, lesson 11's story, and the typed results."""
