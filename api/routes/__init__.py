"""HTTP routes: thin functions that parse, call one function and render."""
