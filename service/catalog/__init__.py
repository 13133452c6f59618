"""What is served: the models by scale and noise level (``registry``), their cards' figures (``cards``) and
the noise level a file asks for (``noise``)."""
