"""Tests for L{notificator.config.files}: the config files' comments."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from notificator.config import strip_comments


class StripCommentsTests(SynchronousTestCase):
    def test_line_and_block_comments(self) -> None:
        """// and /* */ comments are removed."""
        text = '{"a": 1, // one\n /* two\n lines */ "b": 2}'
        self.assertEqual(json.loads(strip_comments(text)), {"a": 1, "b": 2})

    def test_comment_markers_inside_strings_survive(self) -> None:
        """A // or /* inside a JSON string (a URL) is not a comment."""
        text = '{"u": "https://gw.example.com/*x*/", "q": "say \\"//hi\\""} // c'
        self.assertEqual(
            json.loads(strip_comments(text)),
            {"u": "https://gw.example.com/*x*/", "q": 'say "//hi"'},
        )

    def test_unterminated_block(self) -> None:
        """An unterminated block comment is an error."""
        self.assertRaises(ValueError, strip_comments, '{"a": 1 /* oops')
