"""Corpus stages: sources -> clean -> ... -> pack. Each stage maps an iterable of Documents."""

from cptnb.data.clean import clean_documents, clean_text
from cptnb.data.documents import Document, DropCounter
from cptnb.data.pack import PackedCorpus, pack_documents
from cptnb.data.sources import read_documents

__all__ = ["Document", "DropCounter", "read_documents", "clean_documents", "clean_text", "PackedCorpus", "pack_documents"]
