"""Pages of long lists that stay fast at the far end."""

from __future__ import annotations

from django.core.paginator import Page, Paginator


class FromBothEnds(Paginator):
    """A Paginator whose pages past the middle are read from the other end: the last page of
    100,000 rows is OFFSET 0 in the reversed order, not OFFSET 99,900 (which the database
    walks row by row). Needs a total order (the queryset's ordering ends with a unique key)."""

    def page(self, number) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = min(bottom + self.per_page, self.count)
        query = getattr(self.object_list, "query", None)
        if query is None or bottom <= self.count // 2 or not self.object_list.ordered:
            return super().page(number)
        rows = list(self.object_list.reverse()[self.count - top:self.count - bottom])
        rows.reverse()
        return self._get_page(rows, number, self)
