"""Listing, as the SDK's auto-pager walks it."""

from helpers import create

# More than the largest page (limit=100), so a pager that stops after one full
# page, or a cursor that skips or repeats across pages, is caught.
BATCH_COUNT = 105


def test_given_more_than_a_page_of_batches_when_auto_paging_then_each_is_seen_once_newest_first(
    fresh_server,
):
    client = fresh_server.client()
    created = [create(client, metadata={"n": str(n)}).id for n in range(BATCH_COUNT)]

    seen = [batch.id for batch in client.batches.list(limit=10)]

    assert len(seen) == len(set(seen)), "a batch was listed twice"
    assert seen == created[::-1]


def test_given_more_than_a_page_of_batches_when_listing_100_then_the_page_is_full_and_has_more(
    fresh_server,
):
    client = fresh_server.client()
    created = [create(client).id for _ in range(BATCH_COUNT)]

    page = client.batches.list(limit=100)

    assert [batch.id for batch in page.data] == created[::-1][:100]
    assert page.has_more is True
