"""The results page of recipe stage 8 (`tsekit report`).

``results`` reads what stages 4-7 left in each experiment dir (scores, the
decoded wav.scp, configs and the commands in log headers) and picks the
utterances to show; ``figures`` draws spectrograms and plots as PNG files;
``page`` writes the self-contained HTML folder. Nothing here is imported by
``tsekit --help``: matplotlib is loaded inside the drawing functions.
"""
