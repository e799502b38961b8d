from django.apps import AppConfig


class FrameworkShopConfig(AppConfig):
    name = "tests.framework_shop"
    label = "framework_shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The README's snippet for a model you don't own, as it stands there.
        import shop_search

        shop_search.register(
            "framework_shop.Product",
            images=["images__original"],
            text=["title", "description"],
            identifiers=["upc"],
            categories="categories",
            parent="parent",
            queryset="tests.framework_shop.models.browsable",
        )
