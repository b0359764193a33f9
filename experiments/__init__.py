"""Experiment scripts (absl command-line programs) built on mrijax."""
