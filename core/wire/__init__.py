"""The wire forms: one module per contract converts protobuf messages to the domain model and back.

``network`` (types, api, admin), ``border`` (l2gw), ``sync`` (sync), ``views`` (views); ``pieces``: the agent
channel's Snapshot and Delta in pieces, and answers paged by their size. Only servicers and
clients use them; the model, the planners, the store and the drivers never see a protobuf type.
"""
