"""The demo: a misbehaving orders API and a pipeline that heals around it."""
