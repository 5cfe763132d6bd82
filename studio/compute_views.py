"""The Compute page: compute targets of a workspace. (Being written.)"""

from django.http import Http404


def compute_list(request, workspace):
    raise Http404


def compute_edit(request, workspace, target_id=None):
    raise Http404


def compute_test(request, workspace, target_id):
    raise Http404


def compute_delete(request, workspace, target_id):
    raise Http404
