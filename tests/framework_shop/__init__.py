"""
A catalog shaped like a third-party shop framework's (django-oscar, Saleor):
a category tree by parent pointer, many-to-many categories, prices on stock
records (several per product), and categories without ``__str__``.
Installed by the test settings only.
"""
