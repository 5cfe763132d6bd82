"""Under /mlflow/ every error is MLflow's JSON `{"error_code", "message"}`, also those Django makes itself (an unknown
route's 404, a CSRF or method refusal), so an MLflow client always reads a message it can show."""

from mlflow_api import errors


class MlflowJsonErrorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(errors.PREFIX) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        code, message = errors.BY_STATUS.get(response.status_code, (errors.BAD_REQUEST, "The request failed."))
        if response.status_code == 405 and response.has_header("Allow"):
            message = f"This route takes {response['Allow']}."
        replaced = errors.response(code, message, response.status_code)
        for header in ("Allow", "WWW-Authenticate"):
            if response.has_header(header):
                replaced[header] = response[header]
        return replaced
