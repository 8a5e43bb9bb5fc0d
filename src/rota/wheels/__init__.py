"""The wheel registry (docs/wheels.md): wheels in the ``rota_wheels`` object
store, their history in SQL, and the operations the API and the ops UI share."""
