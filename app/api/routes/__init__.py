"""Route modules: one APIRouter per resource, included by app/main.py."""
