"""Bad requests say what was wrong: Django's own 400 page drops the message a view gives BadRequest."""

from django.core.exceptions import BadRequest
from django.http import HttpResponse
from django.template.loader import render_to_string


class BadRequestMessageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, BadRequest):
            return None
        message = str(exception) or "The request could not be understood."
        if request.headers.get("HX-Request") or "text/html" not in request.headers.get("Accept", "text/html"):
            return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
        return HttpResponse(render_to_string("400.html", {"message": message}, request=request), status=400)
