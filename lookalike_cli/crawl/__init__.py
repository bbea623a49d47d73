"""Crawl: candidate URLs from a source (image search or a URL list), downloaded and verified into the images folder."""
