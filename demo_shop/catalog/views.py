"""The demo shop's own catalog pages: only what shoppers may see."""

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render

from shop_search.status import status_of

from .models import visible_products


def product_list(request):
    products = (
        visible_products(request)
        .select_related("category")
        .order_by("category__name", "name")
    )
    page = Paginator(products, 48).get_page(request.GET.get("page"))
    return render(request, "catalog/product_list.html", {"page": page})


def product_detail(request, pk):
    # An unpublished product answers 404, as one that does not exist.
    product = get_object_or_404(
        visible_products(request).select_related("category"), pk=pk
    )
    context = {
        "product": product,
        "gallery": product.gallery.all(),
        "search_status": status_of(product),
    }
    return render(request, "catalog/product_detail.html", context)
