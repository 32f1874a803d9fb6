"""sync.protocol"""
