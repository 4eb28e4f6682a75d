"""The SFU side: the operator's MediaSoup server run and watched like FFmpeg, one
producer per stream that feeds it, and viewer sessions kept alive by heartbeats.

Entries: :class:`process.SfuProcess`, :class:`producers.ProducerManager`,
:class:`consumers.ConsumerTracker`.
"""
