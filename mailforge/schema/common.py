"""Pieces every list shares: paging parameters and the paging fields of the answer.

A list answer carries ``total`` (the matches of the filters), ``limit``, ``offset`` and
``next_cursor`` (pass it back as ``cursor`` for the next page; null on the last page).
``offset`` keeps working; ``cursor`` pages in constant time however deep.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import Query, Reply

LIMIT_DESCRIPTION = "How many items per page."
OFFSET_DESCRIPTION = ("Skip this many items (slow deep into a long list: prefer "
                      "cursor).")
CURSOR_DESCRIPTION = "The next_cursor of the previous page; takes precedence over offset."


class Page(Query):
    """Paging of a list: 50 items by default, at most 500."""

    limit: Annotated[int, Field(ge=1, le=500, description=LIMIT_DESCRIPTION,
                                examples=[100])] = 50
    offset: Annotated[int, Field(ge=0, le=10_000_000, description=OFFSET_DESCRIPTION,
                                 examples=[0])] = 0
    cursor: Annotated[str | None, Field(max_length=512, description=CURSOR_DESCRIPTION,
                                        examples=["WzEsImNyZWF0ZWRfYXQiLFtdXQ"])] = None


class PageInfo(Reply):
    """The paging fields of a list answer."""

    total: Annotated[int, Field(description="How many items match the filters.",
                                examples=[1234])]
    limit: Annotated[int, Field(description="The page size used.", examples=[100])]
    offset: Annotated[int, Field(description="The offset used (0 with a cursor).",
                                 examples=[0])]
    next_cursor: Annotated[str | None, Field(
        description="Pass as cursor to get the next page; null on the last page.",
        examples=["WzEsImNyZWF0ZWRfYXQiLFtdXQ"])] = None
