"""Apps on the package: the webcam demo and the settings explorer, with their notebook widgets."""
