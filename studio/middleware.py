"""Error responses that say what was wrong, in the shape the client reads.

- `BadRequestMessageMiddleware`: Django's own 400 page drops the message a view gives BadRequest; pages show it.
- `ApiJsonErrorsMiddleware`: under /api/ every error is JSON `{"error": ...}`, also those Django makes itself (an
  unknown route's 404, a wrong method's 405), never an HTML page.
"""

import json

from django.core.exceptions import BadRequest
from django.http import HttpResponse
from django.template.loader import render_to_string

API_PREFIX = "/api/"
DEFAULT_MESSAGES = {
    400: "The request could not be understood.",
    401: "Authentication is needed: send a personal API token as 'Authorization: Token <token>'.",
    403: "You may not do that here.",
    404: "There is no such API route: see /api/v1/docs for the routes there are.",
    405: "This route does not take that method.",
    413: "The request body is too large.",
    500: "The studio failed to answer this request; the error is in its log.",
}


class BadRequestMessageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, BadRequest):
            return None
        message = str(exception) or "The request could not be understood."
        if request.path.startswith(API_PREFIX):
            return HttpResponse(json.dumps({"error": message}), status=400, content_type="application/json")
        if request.headers.get("HX-Request") or "text/html" not in request.headers.get("Accept", "text/html"):
            return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
        return HttpResponse(render_to_string("400.html", {"message": message}, request=request), status=400)


class ApiJsonErrorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(API_PREFIX) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        message = DEFAULT_MESSAGES.get(response.status_code, "The request failed.")
        if response.status_code == 405 and response.has_header("Allow"):
            message = f"This route takes {response['Allow']}."
        replaced = HttpResponse(json.dumps({"error": message}), status=response.status_code,
                                content_type="application/json")
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if response.has_header(header):
                replaced[header] = response[header]
        return replaced
