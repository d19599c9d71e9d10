"""The module kit: scaffold a mirror module from a template (``hamirror module new``) and check one
with this node's values and its server's durability settings (``hamirror module check``)."""
