"""publisher: Rendered video in; platform post and engagement read-back out."""
