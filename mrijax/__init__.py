"""mrijax: testing deep-learning MRI reconstruction for instabilities and hallucinations."""

__version__ = "0.1.0"
