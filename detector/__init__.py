"""SPP-net object detection (He et al., 2014): see README.md. Importing the package has no side effects."""
