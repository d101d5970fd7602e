"""The runtime contract shared by training and serving.

Taxonomy, text building, file reading, artifact reading and writing, and the error tree. `training`
imports from here; nothing here imports `training`.
"""
