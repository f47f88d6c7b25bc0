"""Video and animated images: probe, decode, stylize frame by frame, stabilize, encode.

Plain functions with no job or HTTP knowledge; the video job kind and the CLI drive them.
"""
