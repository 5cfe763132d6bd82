"""Under /mlflow/<workspace>/api/ every error is MLflow's JSON `{"error_code", "message"}`, also those Django makes
itself (an unknown route's 404, a method refusal), so an MLflow client always reads a message it can show. (The pages
at /mlflow/<workspace>/, which open the links an MLflow client prints, answer as pages.)"""

import re

from mlflow_api import errors

API_PATH = re.compile(r"^/mlflow/[^/]+/(api|ajax-api)/")


class MlflowJsonErrorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code < 400 or not API_PATH.match(request.path):
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
