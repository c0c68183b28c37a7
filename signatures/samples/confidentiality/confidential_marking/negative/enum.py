class Level(Enum):
    PUBLIC = 0
    CONFIDENTIAL = 2
