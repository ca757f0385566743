"""Import jobs: zip, browser upload, URL list, server folder and web search sources, run in the background."""
