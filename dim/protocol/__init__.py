"""The DIM wire protocol: typed frames and a sans-IO codec, plus thin Twisted framing."""
