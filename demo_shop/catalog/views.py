from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render

from .models import Product


def product_list(request):
    products = Product.objects.select_related("category").order_by(
        "category__name", "name"
    )
    page = Paginator(products, 48).get_page(request.GET.get("page"))
    return render(request, "catalog/product_list.html", {"page": page})


def product_detail(request, pk):
    product = get_object_or_404(Product.objects.select_related("category"), pk=pk)
    return render(request, "catalog/product_detail.html", {"product": product})
