"""The strawberry GraphQL schema: types, queries, filters, DataLoaders and the permission directive."""
